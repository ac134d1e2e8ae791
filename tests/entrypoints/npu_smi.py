"""Recorded ``npu-smi info`` outputs of three kinds of Ascend host, for the chip guard's tests.

There is no NPU on this project's machines, so these are written from public documentation and
reports that show the command's output on real hosts; the layout (borders, column headers, one
block per chip, the NPU name in the first row of a block) is the real one, the readings (power,
temperature, memory, bus ids) are made up and do not matter:

* ``A2_910B``: an Atlas 800T A2 with eight 910B3 NPUs (npu-smi 24.1.rc1), as in the NPU chapter of
  ModelScope ms-swift's documentation and in vllm-ascend bug reports (``collect_env`` output);
* ``A3_910C``: an Atlas A3 (910C) node, two chips per NPU with a ``Chip  Phy-ID`` header and the
  name ``Ascend910`` (npu-smi 25.3.rc1), as in vllm-ascend bug reports run on A3;
* ``INFERENCE_310P``: an inference server with two Atlas 300I 310P3 cards (``Chip    Device``
  header, no HBM column), as in the ATC steps of Ascend ModelZoo-PyTorch's ACL_PyTorch model READMEs.

What they do not model: ``npu-smi`` failing (-8005 when another container holds a device), vNPU
splits, and the process table's contents (only its empty form is here).
"""

from __future__ import annotations

_NO_PROCESSES = """\
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| No running processes found in NPU 0                                                            |
+===========================+===============+====================================================+
"""

_A2_HEADER = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 24.1.rc1                 Version: 24.1.rc1                                             |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
"""
_A2_NPU = """\
| {i}     910B3               | OK            | {power}        {temp}                0    / 0             |
| 0                         | 0000:{bus}:00.0  | 0           0    / 0          3318 / 65536         |
+===========================+===============+====================================================+
"""
_A2_BUSES = ("C1", "C2", "81", "82", "01", "02", "41", "42")
A2_910B = (
    _A2_HEADER
    + "".join(_A2_NPU.format(i=i, power=f"{90 + i}.5", temp=40 + i, bus=b) for i, b in enumerate(_A2_BUSES))
    + _NO_PROCESSES
)

_A3_HEADER = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 25.3.rc1                 Version: 25.3.rc1                                             |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip  Phy-ID              | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
"""
_A3_NPU = """\
| {i}     Ascend910           | OK            | 16{i}.4       43                0    / 0             |
| 0     {chip0}                   | 0000:9{i}:00.0  | 0           0    / 0          3158 / 65536         |
+------------------------------------------------------------------------------------------------+
| {i}     Ascend910           | OK            | -           43                0    / 0             |
| 1     {chip1}                   | 0000:9{i}:01.0  | 0           0    / 0          2882 / 65536         |
+===========================+===============+====================================================+
"""
A3_910C = _A3_HEADER + "".join(_A3_NPU.format(i=i, chip0=2 * i, chip1=2 * i + 1) for i in range(8)) + _NO_PROCESSES

INFERENCE_310P = """\
+--------------------------------------------------------------------------------------------------------+
| npu-smi 23.0.0                                   Version: 23.0.0                                       |
+-------------------------------+-----------------+------------------------------------------------------+
| NPU     Name                  | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
| Chip    Device                | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
+===============================+=================+======================================================+
| 0       310P3                 | OK              | 16.1         41                0    / 0              |
| 0       0                     | 0000:82:00.0    | 0            1080 / 21534                            |
+===============================+=================+======================================================+
| 1       310P3                 | OK              | 15.2         44                0    / 0              |
| 0       1                     | 0000:89:00.0    | 0            1071 / 21534                            |
+===============================+=================+======================================================+
"""

HOSTS = {"910b": A2_910B, "A3": A3_910C, "310p": INFERENCE_310P}
