"""Test-wide settings: 8 virtual CPU devices (set before jax is imported) and a private cache.

The tests build many runs of the same tiny models (a straight run, an interrupted one, its
resume; the same tiny config in several files; `python -m jreid.main` subprocesses), each of
which would compile the same XLA programs again. JAX's persistent compilation cache, shared by
the xdist workers and inherited by subprocesses through the environment, compiles each once.
Programs are keyed by their HLO, compile options and JAX version, so a cached program is the
program that would have been compiled. The tests' programs are tiny and compiling them is most of
their time, so LLVM's backend optimisation is off (XLA's own graph optimisations, which decide
what is computed, still run).
"""

import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8 '
                      '--xla_backend_optimization_level=0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), f'jreid-tests-xla-cache-{os.getuid()}'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
