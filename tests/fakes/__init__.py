"""Stand-ins (test fixtures) for what this project's machines cannot download.

* :func:`make_cann_packages` writes stand-ins for Huawei's CANN ``.run`` installers (toolkit, chip
  kernels, NNAL): self-extracting bash scripts with the real file names, options, checks and installed
  layout (:mod:`fakes.cann`).
* :mod:`fakes.cann_runtime` (a script run inside a test image, not imported here) generates ELF stand-ins
  for the CANN runtime libraries torch_npu links, and an empty pyACL ``acl`` module (tests/smoke.py).
* :func:`make_source_repos` creates stand-in git repositories for MindSpeed, MindSpeed-LLM, Megatron-LM,
  Ascend apex and NVIDIA apex with the upstream layout; :func:`add_commit` moves one of their branches
  (:mod:`fakes.sources`).

None of this is upstream software; every generated file says it is a stand-in. Outputs are deterministic:
the same arguments give the same sha256 sums and the same commit ids. Import as ``from fakes import ...``
(pytest puts ``tests/`` on ``sys.path``).
"""

from .cann import make_cann_packages, package_file_names
from .sources import add_commit, make_source_repos

__all__ = ["add_commit", "make_cann_packages", "make_source_repos", "package_file_names"]
