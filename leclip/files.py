"""Atomic file writes: a uniquely named temporary file beside the target, then a rename,
so readers (and a resumed run) see the old file or the new one, never a part of one."""
import os
import os.path as osp
import tempfile


def write_atomic(path, write):
    """write(tmp_path) into a temporary file beside `path`, then rename it over `path`;
    the temporary file is removed whatever happens."""
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(path)), prefix=f".{osp.basename(path)}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    """`text` into `path` atomically, flushed to disk before the rename."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path, write)
