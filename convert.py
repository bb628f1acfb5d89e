"""Convert ERNIE-ViL 2.0 Paddle weights to PyTorch: ``python convert.py --src X.pdparams --dst DIR [--vocab V]``."""
from ernievil2torch.cli import convert, run_command

if __name__ == "__main__":
    run_command(convert, name="convert")
