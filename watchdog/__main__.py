"""`python -m watchdog` runs the same CLI as the `gpu-watchdog` script."""

from watchdog.cli.main import main

if __name__ == "__main__":
    main()
