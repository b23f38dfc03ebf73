"""Reading the images a dataset lists."""
from PIL import Image


def read_image(path):
    """An RGB PIL image; a missing or unreadable file raises one error naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"Image listed by the dataset is missing: {path} (check DATASET.ROOT)") from None
    except OSError as err:
        raise OSError(f"Cannot read image {path}: {err} (re-download the file or remove it from the split)") from None
