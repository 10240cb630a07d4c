"""``python -m timm_alexnet_split.train [options]``: the same as ``timm-alexnet-split train [options]``."""
import sys

from ..cli import main as _cli_main

if __name__ == '__main__':
    sys.exit(_cli_main(['train', *sys.argv[1:]]))
