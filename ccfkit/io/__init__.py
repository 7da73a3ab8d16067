"""Reading and writing diffraction frames in CXI/HDF5 files.

- :mod:`ccfkit.io.source`: lazy, checked reading of one or several CXI files
  (frames, mask, labels, geometry), for the build.
- :mod:`ccfkit.io.cxi`: writing CXI files of frames that are never half-written
  (``ccfkit simulate`` writes its file through it: :mod:`ccfkit.simulate.cxi_file`).

The submodules are imported on use (``from ccfkit.io.cxi import ...``) so that
importing :mod:`ccfkit` stays light.
"""
