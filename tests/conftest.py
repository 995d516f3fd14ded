"""Tests run torch at one thread: a cell's bits are independent of its batch-mates only there
(docs/protocol.md), and the suite shares two cores with whatever else the machine runs."""

import torch

torch.set_num_threads(1)
