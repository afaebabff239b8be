"""Generated stand-in data sets the tests share, named by the spec the data layer parses."""
from __future__ import annotations

# 10 classes, 12 training and 4 test images each: enough for the loop's mechanics (resume, trace,
# checkpoints, locks), far too little to learn anything.
TINY = "synthetic-cifar100:classes=10,train=12,test=4,seed=3"
# 4 classes, 20 training images each: two ranks' shards of a few global batches.
TINY_4 = "synthetic-cifar100:classes=4,train=20,test=4,seed=5"
