"""``python -m ernievil2torch.embed ...`` / ``torchrun ... -m ernievil2torch.embed ...``: a stable module path for the
embed command (the code lives in :mod:`ernievil2torch.apps.embed`)."""

if __name__ == "__main__":
    from ernievil2torch.cli import main_embed

    main_embed()
