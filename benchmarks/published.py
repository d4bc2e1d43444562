"""Published numbers: kept in `jreid.published` (run reports put them beside a run's own rows);
this module re-exports them for the benchmark scripts and older callers."""

from jreid.published import *  # noqa: F401,F403
