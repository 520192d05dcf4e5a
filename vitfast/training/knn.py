"""Weighted k-NN classification on frozen features (DINO's protocol, Wu et al. 2018): L2-normalised
features of the training images are the memory bank; each test image's k nearest by cosine similarity
vote for their class with weight exp(similarity / T). DINO: k = 20, T = 0.07."""
import torch
import torch.nn.functional as F

from .. import progress
from ..models.ssl_heads import features

__all__ = ["extract_features", "knn_classify", "knn_accuracy"]


@torch.no_grad()
def extract_features(backbone, loader, device, amp_dtype=None, desc=None, normalize=True):
    """(float32 features (N, D) on the CPU, L2-normalised unless normalize=False; labels (N,)) of the
    loader's images, without the images a dataset could not read (label -1)."""
    backbone.eval()
    feats, labels = [], []
    batches = loader if desc is None else progress.bar(loader, total=len(loader), desc=desc, unit="batch",
                                                       announce=True)
    try:
        for x, y in batches:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                f = features(backbone, x.to(device, non_blocking=True))
            feats.append((F.normalize(f.float(), dim=-1) if normalize else f.float()).cpu())
            labels.append(y.cpu())
    finally:
        if desc is not None:
            batches.close()
    feats, labels = torch.cat(feats), torch.cat(labels)
    keep = labels >= 0
    return feats[keep], labels[keep]


def knn_classify(bank, bank_labels, queries, num_classes, k=20, temperature=0.07, chunk=1024):
    """(N, num_classes) vote scores of each query: the sum of exp(cos / T) over its k nearest bank entries
    of each class. bank and queries L2-normalised."""
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, queries.shape[0], chunk):
        sim = queries[start:start + chunk] @ bank.T
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(top.shape[0], num_classes, dtype=top.dtype)
        votes.scatter_add_(1, bank_labels[idx], (top / temperature).exp())
        scores.append(votes)
    return torch.cat(scores)


def knn_accuracy(bank, bank_labels, queries, labels, num_classes, k=20, temperature=0.07):
    """(top-1 %, top-5 %) of weighted k-NN."""
    votes = knn_classify(bank, bank_labels, queries, num_classes, k, temperature)
    top = votes.topk(min(5, num_classes), dim=1).indices
    hits = top == labels[:, None]
    return 100.0 * hits[:, 0].float().mean().item(), 100.0 * hits.any(dim=1).float().mean().item()
