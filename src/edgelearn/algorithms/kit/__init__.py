"""The machinery tier algorithms share and no algorithm owns: tier architectures (``tiers``), per-node model
states and fault charging (``nodes``), hop-by-hop transfers (``comm``), knowledge distillation losses and
teacher inference (``distill``).
"""
