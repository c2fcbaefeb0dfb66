"""Atheris target: mqtt (see target.py for how to run it, oracles.py for the property)."""

from target import run

if __name__ == "__main__":
    run("mqtt")
