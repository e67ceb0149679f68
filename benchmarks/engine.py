"""Engine benchmark runner: ``python benchmarks/engine.py [--quick]`` (see `pynqtorch.bench.engine`)."""

from pynqtorch.bench.engine import main

if __name__ == "__main__":
    main()
