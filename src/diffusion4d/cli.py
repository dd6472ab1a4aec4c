"""`diffusion4d …` command line (filled in as subcommands land)."""

import argparse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="diffusion4d")
    parser.parse_args(argv)
    return 0
