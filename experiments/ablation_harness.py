# ruff: noqa  -- a prototype kept as it ran, so that the ablation rows reproduce exactly
"""The prototype harness behind docs/learning.md's ablation rows; not part of the package.

One file, global state, printed JSON lines: written to try training objectives quickly on the
shared Tiny ImageNet subset before wiring the useful ones into `deepstdp train`. Every row of
the ablation table that names this script was produced by it, e.g.

    python experiments/ablation_harness.py --epochs 30 --ktrain 300 --lr 0.03

Modes: dc2 (cross-entropy to fixed cluster centroids, DeepCluster-v2), sup (true labels: the
supervised control), simclr (contrastive reference, no clusters), swap / swapsk (one view's
nearest-centroid / Sinkhorn assignment as the other view's target, SwAV-style), dc1 (a fresh
linear top layer each epoch). k-NN, probe and k = 10 k-means ACC every --evalevery epochs.
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src"))
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from deepstdp.augment import random_resized_crop_flip
from deepstdp.clustering import KMeansClustering, PCAWhitening
from deepstdp.data import channel_stats, load_dataset, normalize, to_float_tensor
from deepstdp.metrics import cluster_metrics
from deepstdp.models import ConvNet

p = argparse.ArgumentParser()
p.add_argument("--root", default="../shared/data")
p.add_argument("--epochs", type=int, default=30)
p.add_argument("--ktrain", type=int, default=100)
p.add_argument("--views", type=int, default=2)
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--bs", type=int, default=128)
p.add_argument("--wd", type=float, default=5e-4)
p.add_argument("--temp", type=float, default=0.1)
p.add_argument("--proj", type=int, default=128)
p.add_argument("--crop", type=float, default=0.2)
p.add_argument("--jitter", type=float, default=0.4)
p.add_argument("--sobel", type=int, default=0)
p.add_argument("--pca", type=int, default=0)
p.add_argument("--mode", default="dc2")  # dc2 | dc1 | sup
p.add_argument("--widths", default="32,M,64,M,128,M,256,M")
p.add_argument("--bf16", type=int, default=0)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--size", type=int, default=32)
p.add_argument("--clusterfeat", default="emb")  # emb | feat
p.add_argument("--learnproto", type=int, default=0)
p.add_argument("--recluster", type=int, default=0)
p.add_argument("--evalevery", type=int, default=5)
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
tr = load_dataset("tiny-imagenet", "train", data_root=a.root)
va = load_dataset("tiny-imagenet", "val", data_root=a.root)
mean, std = channel_stats(tr.images)
xtr = normalize(to_float_tensor(tr.images, a.size), mean, std)
xva = normalize(to_float_tensor(va.images, a.size), mean, std)
mean4, std4 = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)


def color(x, g):
    # x normalized; go back to [0,1]
    n = len(x)
    x = x * std4 + mean4
    s = a.jitter
    u = lambda: torch.rand(n, 1, 1, 1, generator=g)
    apply = (u() < 0.8).float()
    b = 1 + (2 * u() - 1) * s
    c = 1 + (2 * u() - 1) * s
    sat = 1 + (2 * u() - 1) * s
    hue = (2 * u() - 1) * 0.1
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    y = x * b
    m = gray.mean(dim=(2, 3), keepdim=True) * b
    y = (y - m) * c + m
    gy = 0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]
    y = (y - gy) * sat + gy
    # hue: rotate in YIQ
    th = hue.view(n) * 2 * math.pi
    cos, sin = torch.cos(th), torch.sin(th)
    T = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    Ti = torch.linalg.inv(T)
    R = torch.zeros(n, 3, 3)
    R[:, 0, 0] = 1
    R[:, 1, 1] = cos
    R[:, 1, 2] = -sin
    R[:, 2, 1] = sin
    R[:, 2, 2] = cos
    M = Ti @ R @ T
    y = torch.einsum("nij,njhw->nihw", M, y)
    y = y.clamp(0, 1)
    y = apply * y + (1 - apply) * x
    gr = (u() < 0.2).float()
    gg = (0.299 * y[:, 0:1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]).expand_as(y)
    y = gr * gg + (1 - gr) * y
    return (y - mean4) / std4


def aug(x, g):
    x = random_resized_crop_flip(x, g, scale=(a.crop, 1.0))
    if a.jitter > 0:
        x = color(x, g)
    return x


model = ConvNet(3, 10, widths=a.widths, feat_dim=512, sobel=bool(a.sobel), pool="max", dropout=0.0)
proj = nn.Linear(512, a.proj) if a.proj else nn.Identity()
model = model.to(memory_format=torch.channels_last)
params = list(model.body.parameters()) + list(model.head.parameters()) + list(proj.parameters())
opt = torch.optim.SGD(params, lr=a.lr, momentum=0.9, weight_decay=a.wd)
steps_per_epoch = len(xtr) // a.bs
total = steps_per_epoch * a.epochs


def lr_at(s):
    w = steps_per_epoch * 2
    if s < w:
        return a.lr * (s + 1) / w
    return a.lr * 0.5 * (1 + math.cos(math.pi * (s - w) / (total - w)))


def embed(f):
    z = proj(f)
    return F.normalize(z, dim=1)


@torch.no_grad()
def extract(x):
    model.eval()
    proj.eval()
    fs, es = [], []
    for i in range(0, len(x), 500):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(a.bf16)):
            f = model.features(x[i : i + 500].contiguous(memory_format=torch.channels_last)).float()
        fs.append(f)
        es.append(embed(f))
    return torch.cat(fs).numpy(), torch.cat(es).numpy()


def knn(ftr, fva, k=20):
    a_ = F.normalize(torch.from_numpy(ftr), dim=1)
    b_ = F.normalize(torch.from_numpy(fva), dim=1)
    sim = b_ @ a_.T
    v, i = sim.topk(k, dim=1)
    lab = torch.from_numpy(tr.labels)[i]
    w = (v / 0.07).exp()
    votes = torch.zeros(len(fva), 10).scatter_add_(1, lab, w)
    return float((votes.argmax(1).numpy() == va.labels).mean())


def probe(ftr, fva):
    sc = StandardScaler().fit(ftr)
    clf = LogisticRegression(max_iter=300, C=0.1).fit(sc.transform(ftr), tr.labels)
    return float(clf.score(sc.transform(fva), va.labels))


def cluster_z(e, f):
    src = e if a.clusterfeat == "emb" else f
    if a.pca:
        return PCAWhitening(a.pca).fit_transform(src)
    return src / (np.linalg.norm(src, axis=1, keepdims=True) + 1e-12)


step = 0
for ep in range(a.epochs + 1):
    t0 = time.time()
    loss_m = float("nan")
    if ep > 0:
        model.train()
        proj.train()
        g = torch.Generator().manual_seed(a.seed * 1000 + ep)
        rng = np.random.default_rng(a.seed * 1000 + ep)
        idx = torch.from_numpy(rng.permutation(len(xtr)))
        tot, cnt = 0.0, 0
        for i in range(0, len(idx) - a.bs + 1, a.bs):
            for gparam in opt.param_groups:
                gparam["lr"] = lr_at(step)
            b = idx[i : i + a.bs]
            yb = y[b]
            xs = torch.cat([aug(xtr[b], g) for _ in range(a.views)]).contiguous(
                memory_format=torch.channels_last
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(a.bf16)):
                f = model.features(xs)
            f = f.float()
            if a.mode == "sup":
                logits = head(f)
                loss = F.cross_entropy(logits, torch.from_numpy(tr.labels)[b].repeat(a.views))
            elif a.mode == "simclr":
                e = embed(f)
                n2 = len(e) // 2
                sim = e @ e.T / a.temp
                sim.fill_diagonal_(-1e9)
                tgt = torch.cat([torch.arange(n2, 2 * n2), torch.arange(0, n2)])
                loss = F.cross_entropy(sim, tgt)
            elif a.mode in ("swap", "swapsk"):
                e = embed(f)
                n2 = len(e) // 2
                scores = e @ C.T
                with torch.no_grad():
                    if a.mode == "swap":
                        q = F.one_hot(scores.argmax(1), C.shape[0]).float()
                    else:
                        Q = torch.exp(scores.detach() / 0.05).T  # K x B
                        Q /= Q.sum()
                        K_, B_ = Q.shape
                        for _ in range(3):
                            Q /= Q.sum(dim=1, keepdim=True)
                            Q /= K_
                            Q /= Q.sum(dim=0, keepdim=True)
                            Q /= B_
                        q = (Q * B_).T
                q_sw = torch.cat([q[n2:], q[:n2]])
                logp = F.log_softmax(scores / a.temp, dim=1)
                loss = -(q_sw * logp).sum(1).mean()
            elif a.mode == "dc2":
                logits = embed(f) @ C.T / a.temp
                loss = F.cross_entropy(logits, yb.repeat(a.views))
            else:
                logits = head(f)
                loss = F.cross_entropy(logits, yb.repeat(a.views))
            opt.zero_grad()
            if hopt:
                hopt.zero_grad()
            loss.backward()
            opt.step()
            if hopt:
                hopt.step()
            step += 1
            if a.recluster:
                with torch.no_grad():
                    eb = embed(f.detach()).view(a.views, len(b), -1).mean(0)
                    MEM[b] = F.normalize(eb, dim=1)
                if step % a.recluster == 0:
                    from sklearn.cluster import KMeans

                    km_ = KMeans(
                        a.ktrain,
                        n_init=1,
                        max_iter=20,
                        init=C.detach().numpy().astype(np.float64),
                        random_state=0,
                    ).fit(MEM.numpy())
                    y = torch.from_numpy(km_.labels_.astype(np.int64))
                    C = F.normalize(
                        torch.zeros(a.ktrain, MEM.shape[1]).index_add_(0, y, MEM), dim=1
                    )
            if a.learnproto:
                with torch.no_grad():
                    C.data = F.normalize(C.data, dim=1)
                for gparam in hopt.param_groups:
                    gparam["lr"] = lr_at(step)
            tot += loss.item()
            cnt += 1
        loss_m = tot / cnt
    t1 = time.time()
    ftr, etr = extract(xtr)
    fva, eva = extract(xva)
    z = cluster_z(etr, ftr)
    km = KMeansClustering(a.ktrain, seed=a.seed + ep, n_init=1).fit(z)
    lab = km.labels_
    y = torch.from_numpy(lab)
    # centroids in embedding space
    E = torch.from_numpy(etr)
    C = torch.zeros(a.ktrain, E.shape[1]).index_add_(0, y, E)
    C = F.normalize(C, dim=1)
    MEM = E.clone()
    hopt = None
    if a.learnproto:
        C = nn.Parameter(C.clone())
        hopt = torch.optim.SGD([C], lr=lr_at(step), momentum=0.9)
    if a.mode in ("dc1", "sup"):
        nk = 10 if a.mode == "sup" else a.ktrain
        head = nn.Linear(512, nk)
        hopt = torch.optim.SGD(head.parameters(), lr=lr_at(step), momentum=0.9)
    t2 = time.time()
    row = {
        "ep": ep,
        "loss": round(loss_m, 3),
        "t_train": round(t1 - t0, 1),
        "t_clu": round(t2 - t1, 1),
    }
    if ep % a.evalevery == 0 or ep == a.epochs:
        z10 = cluster_z(etr, ftr)
        km10 = KMeansClustering(10, seed=a.seed, n_init=3).fit(z10)
        m = cluster_metrics(tr.labels, km10.labels_)
        zv = (
            (
                PCAWhitening(a.pca)
                .fit(etr if a.clusterfeat == "emb" else ftr)
                .transform(eva if a.clusterfeat == "emb" else fva)
            )
            if a.pca
            else None
        )
        row.update(
            acc=round(m["acc"], 3),
            nmi=round(m["nmi"], 3),
            knn=round(knn(ftr, fva), 3),
            knn_e=round(knn(etr, eva), 3),
            probe=round(probe(ftr, fva), 3),
            ktr_nmi=round(cluster_metrics(tr.labels, lab)["nmi"], 3),
            maxsz=int(np.bincount(lab).max()),
        )
        row["t_eval"] = round(time.time() - t2, 1)
    print(json.dumps(row), flush=True)
