"""Image-text similarity with a converted model: ``python test.py performance_check [--model DIR]``."""
from ernievil2torch.cli import COMMANDS, run_command

if __name__ == "__main__":
    run_command({"performance_check": COMMANDS["similarity"]}, name="test.py",
                summary="image-text similarity with a converted model")
