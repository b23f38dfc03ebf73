"""`LEDatasetBase`: Dassl's DatasetBase with explicit class names, on either engine.

Dassl derives the classes from train_x's labels, which cannot work for open-set data
(the class list is the ID classes only) nor for multi-label data (labels are multi-hot
tuples) nor when train_x is empty (task B). LE-CLIP datasets pass `classnames`.
"""
from .dassl import DatasetBase


class LEDatasetBase(DatasetBase):
    def __init__(self, train_x=None, train_u=None, val=None, test=None, classnames=None):
        if classnames is None:
            raise ValueError(f"{type(self).__name__}: LE-CLIP datasets must pass classnames")
        self._given_classnames = list(classnames)
        super().__init__(train_x=train_x or [], train_u=train_u or [], val=val or [], test=test or [])

    def get_num_classes(self, data_source):
        return len(self._given_classnames)

    def get_lab2cname(self, data_source):
        return dict(enumerate(self._given_classnames)), list(self._given_classnames)
