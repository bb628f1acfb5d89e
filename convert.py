"""Convert ERNIE-ViL 2.0 Paddle weights to PyTorch: ``python convert.py --src X.pdparams --dst DIR [--vocab V]``."""
from ernievil2torch.cli import COMMANDS, run_command

if __name__ == "__main__":
    run_command(COMMANDS["convert"], name="convert.py")
