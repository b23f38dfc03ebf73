"""The embedded synthetic world: benchmarks and a small CLIP that need no download.

- `render`: vectorised drawing of textured shapes on noisy backgrounds.
- `synth_fg`: fine-grained open-set classes (task A); `synth_ml`: multi-label scenes
  with context-driven co-occurrence (tasks B, C).
- `captions`: captioned world images for pre-training (coarse words reliable, fine
  words rare), `pretrain`: the contrastive pre-training and zero-shot figures.
- `cache`: renders a split once to PNG files plus a manifest under the data root.
- `assets/synth-vit.pt`: the shipped CLIP, loaded by `load_clip("synth-vit")`.

A world seed fixes every image; each split draws from its own seed stream.
"""
