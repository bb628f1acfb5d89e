"""Prove the PyTorch port computes Paddle's function: ``python check.py logit_check [--paddle X --torch DIR]``."""
from ernievil2torch.cli import COMMANDS, run_command

if __name__ == "__main__":
    run_command({"logit_check": COMMANDS["check"]}, name="check.py",
                summary="prove the PyTorch port computes Paddle's function")
