"""The CLIP layer: loading, encoders with prompt/patch/token hooks, prompt learners."""
import warnings

# clip imports pkg_resources, deprecated in setuptools (pinned < 81 in setup.py)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from .encoders import DeepTokens, ImageEncoder, ReplaceAt, TextEncoder, autocast, resolve_logit_scale  # noqa: E402
from .loader import (  # noqa: E402
    EMBEDDED_MODELS,
    BadWeightsError,
    MissingWeightsError,
    build_clip,
    check_input_size,
    load_clip,
    random_clip,
    resolve_checkpoint,
    save_clip,
)
from .prompts import PromptLearner, class_text_features, clean_name  # noqa: E402
from .shared_prefix import concat as concat_prompts  # noqa: E402
