"""The installed version of ccfkit, from the package metadata (a leaf module)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ccfkit")
except PackageNotFoundError:  # pragma: no cover - running from a tree that is not installed
    __version__ = "0+unknown"
