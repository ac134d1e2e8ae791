"""ascend-llm: the in-image stage runner of ascend-llm-stack.

One console command per MindSpeed-LLM pipeline stage (convert, preprocess, pretrain, sft, lora,
generate, evaluate, tensorboard, check). It composes the exact upstream command from a model
preset plus the user's options, checks the classic mistakes before any NPU is used, and runs the
command with signals forwarded and the exit status kept. It depends on PyYAML only, so it runs on
a laptop (``--help``, ``--dry-run``) as well as inside the image.
"""

__version__ = "0.1.0"
