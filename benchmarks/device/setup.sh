# Sourced at the start of every call on the lent GPU machine (from the repo root). It needs, carried with the call:
#   .gl/   libEGL and friends as .deb files (device README: apt-get download libvulkan1 libegl1 libglvnd0 libopengl0
#          libgl1 libglx0 libgles2), for the headless OpenGL renderer;
#   .whl/  wheels for Python 3.12 of what the device image lacks (diffusers 0.42.1, pygltflib, moderngl, glcontext,
#          dataclasses-json, marshmallow, deprecated, typing-inspect, gsplat 1.5.3 for the GPU rasterizer: `pip download
#          --no-deps --python-version 3.12`; without gsplat the gsplat tests skip and the fit uses the torch rasterizer).
# once per machine: a second install under a process that already imports from /tmp/site would pull files from under it
if [ ! -f /tmp/site/.installed ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || return 1
  touch /tmp/site/.installed
fi
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/benchmarks:$PWD/tests PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
