"""A token hook that records what each transformer block receives (for hook tests)."""


class Recorder:
    def __init__(self, hook):
        self.hook, self.seen = hook, {}

    def __call__(self, index, x):
        x = self.hook(index, x)
        self.seen[index] = x.detach().clone()
        return x
