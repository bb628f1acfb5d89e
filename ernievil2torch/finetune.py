"""``python -m ernievil2torch.finetune ...`` / ``torchrun --nproc_per_node N -m ernievil2torch.finetune ...``: a
stable module path for the finetune command (the code lives in :mod:`ernievil2torch.training`)."""

if __name__ == "__main__":
    from ernievil2torch.cli import main_finetune

    main_finetune()
