"""The embedded synthetic world: benchmarks and a small CLIP that need no download.

- `render`: vectorised drawing of shapes with small local parts on noisy backgrounds.
- `synth_fg`: fine-grained open-set classes (task A): siblings differ only in a small
  part, OOD classes are siblings of ID ones. `synth_ml`: multi-label scenes of large
  and small objects whose labels co-occur by planted scene contexts (tasks B, C).
- `captions`: the caption language (coarse words reliable, parts rare in whole-image
  captions and common in region captions, small objects seldom named, synonyms) and
  the captioned batches of images, crops and regions that pre-train the CLIP;
  `pretrain`: the contrastive pre-training (whole images and regions).
- `properties`: each premise of the world as a measurement (scripts/world_report.py).
- `cache`: renders a split once to PNG files plus a manifest under the data root.
- `assets/synth-vit.pt`: the shipped CLIP, loaded by `load_clip("synth-vit")`.

A world seed fixes every image; each split draws from its own seed stream.
"""
