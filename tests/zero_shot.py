"""Zero-shot CLIP on a built dataset's test split, computed without LE-CLIP's trainer,
loaders or evaluators (PIL, torchvision, the clip tokenizer, sklearn): the reference the
harness's zero-shot rows must equal."""
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image
from sklearn.metrics import average_precision_score

import clip
from leclip.backbone import load_clip

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@torch.no_grad()
def similarities(dataset, template, size=64, backbone="synth-vit"):
    """(CLIP's class probabilities [N, C] of the test images, softmax of the model's
    logit scale times the cosines to the class prompts; labels)."""
    model = load_clip(backbone)
    view = T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
        T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD),
    ])
    images = torch.stack([view(Image.open(d.impath).convert("RGB")) for d in dataset.test])
    prompts = [template.format(name.replace("_", " ")) for name in dataset.classnames]
    tokens = clip.tokenize(prompts, context_length=model.context_length, truncate=True)
    image = F.normalize(model.encode_image(images), dim=-1)
    text = F.normalize(model.encode_text(tokens), dim=-1)
    probs = (model.logit_scale.exp() * image @ text.t()).softmax(dim=-1)
    return probs.numpy(), [d.label for d in dataset.test]


def closed_accuracy(sims, labels):
    labels = np.asarray(labels)
    is_id = labels < sims.shape[1]
    return 100.0 * float((sims[is_id].argmax(axis=1) == labels[is_id]).mean())


def mean_ap(sims, labels):
    targets = np.asarray(labels)
    return 100.0 * float(np.mean([
        average_precision_score(targets[:, c], sims[:, c]) for c in range(targets.shape[1]) if targets[:, c].any()
    ]))
