"""LE-CLIP: label-efficient CLIP adaptation for the Dassl ecosystem.

`import leclip.trainers, leclip.datasets` registers every trainer and benchmark in the
active engine's registries (Dassl.pytorch when installed, else `leclip.engine`).
"""
__version__ = "0.1.0"
