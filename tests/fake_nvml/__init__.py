"""A fake NVIDIA driver (libnvidia-ml.so.1) so pynvml's real code runs in tests without a GPU."""
