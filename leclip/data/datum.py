"""Datum and DatasetBase with Dassl's interface, independent of the engine.

A Datum's label is an int, or a multi-hot tuple of 0/1 ints for multi-label data. Both
engines' data managers (Dassl's and `leclip.data.DataManager`) read only the attributes
defined here, so LE-CLIP's datasets subclass these classes on either engine.
"""
import random
from collections import defaultdict


class Datum:
    """One data instance: image path, label (int, or multi-hot tuple), domain, class name."""

    def __init__(self, impath="", label=0, domain=0, classname=""):
        assert isinstance(impath, str)
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self):
        return self._impath

    @property
    def label(self):
        return self._label

    @property
    def domain(self):
        return self._domain

    @property
    def classname(self):
        return self._classname

    def __repr__(self):
        return f"Datum({self._impath!r}, label={self._label!r})"


class DatasetBase:
    """Holds train_x (labeled), train_u (unlabeled), val and test lists of Datum."""

    dataset_dir = ""
    domains = []

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self):
        return self._lab2cname

    @property
    def classnames(self):
        return self._classnames

    @property
    def num_classes(self):
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source):
        label_set = set(item.label for item in data_source)
        return max(label_set) + 1

    @staticmethod
    def get_lab2cname(data_source):
        container = set((item.label, item.classname) for item in data_source)
        mapping = {label: classname for label, classname in container}
        labels = sorted(mapping.keys())
        return mapping, [mapping[label] for label in labels]

    def check_input_domains(self, source_domains, target_domains):
        for domain in list(source_domains) + list(target_domains):
            if domain not in self.domains:
                raise ValueError(f"Input domain must belong to {self.domains}, but got [{domain}]")

    def generate_fewshot_dataset(self, *data_sources, num_shots=-1, repeat=False):
        """Sample num_shots images per class from each data source (Dassl semantics)."""
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        output = []
        for data_source in data_sources:
            tracker = self.split_dataset_by_label(data_source)
            dataset = []
            for label, items in tracker.items():
                if len(items) >= num_shots:
                    sampled = random.sample(items, num_shots)
                elif repeat:
                    sampled = random.choices(items, k=num_shots)
                else:
                    sampled = items
                dataset.extend(sampled)
            output.append(dataset)
        return output[0] if len(output) == 1 else output

    @staticmethod
    def split_dataset_by_label(data_source):
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output

    @staticmethod
    def split_dataset_by_domain(data_source):
        output = defaultdict(list)
        for item in data_source:
            output[item.domain].append(item)
        return output
