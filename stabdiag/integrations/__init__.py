"""Framework callbacks that run stabdiag's ``Monitor`` inside a training loop.

``stabdiag.integrations.hf.StabdiagCallback`` (Hugging Face ``Trainer``, and TRL's trainers, which
are Trainers) and ``stabdiag.integrations.lightning.StabdiagCallback`` (Lightning). Each module
imports its framework when imported, so ``import stabdiag`` stays free of torch and frameworks.
"""
