"""A PEF-style coupling eraser: each attribute group's representations transported onto one shared distribution.

Perfect erasure functions (Basu Roy Chowdhury et al., "Fundamental Limits of Perfect Concept Erasure",
AISTATS 2025, arXiv 2503.20098; their code: github.com/brcsomnath/PEF) work on discrete distributions:
every attribute group ``z`` has a distribution ``P_z`` over a finite support, one target distribution ``Q``
is chosen, and a sample of group ``z`` is replaced by a draw from a coupling of ``P_z`` with ``Q``, taken
conditionally on the sample. Whatever the group, the output is then distributed as ``Q``: it is
independent of the attribute, so no probe, linear or not, reads it better than chance. LEACE
(:mod:`workers.unlearning.concept_erasure`) only makes it linearly undecodable.

Here, for a layer's continuous representations:

1. the support is a codebook of at most ``cells`` centroids, k-means on the fitting records of all
   groups together, a cell of fewer than ``MIN_CELL_RECORDS`` records merged into its nearest
   (aggregates of at least five records, never a record's own representation: :func:`small_cells_merged`);
2. ``P_z`` is the share of group ``z``'s fitting records nearest to each centroid (:func:`cell_masses`);
3. ``Q`` is the fixed-support 2-Wasserstein barycenter of the ``P_z`` (weighted by the groups' shares),
   and each coupling ``pi_z`` the optimal transport plan from ``P_z`` to ``Q`` under squared distances
   between centroids, both from one linear programme (:func:`barycenter_couplings`). The paper picks ``Q``
   to keep the most information; the barycenter moves the representations the least, which is what
   the layers after the erased one read;
4. a representation ``x`` of group ``z`` goes to its nearest centroid ``i`` and is replaced by the
   centroid ``j`` drawn from ``pi_z[i, :] / P_z[i]`` (:func:`transport_kernels`), by a uniform number
   hashed from the input itself and the stored seed (:func:`input_uniforms`), so the same input always
   gets the same output, whatever batch it comes in.

What it needs, and so what it promises: the map is class-conditional, so **the attribute of every
input must be given at inference** (:func:`attribute_given`); a forward pass without it raises
:class:`AttributeNeeded`. Independence holds for inputs drawn like the fitting records, up to how well
the cell shares were estimated from them; it costs the task whatever the task shares with the attribute
(a task label that determines the attribute, as digits determine parity, can be predicted at most about
as well as the attribute's values can be paired off: about half the digits for parity).

Plain PyTorch/NumPy (SciPy's LP solver and scikit-learn's k-means imported where a fit runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

COUPLING_FIELDS = ("centroids", "kernels", "values", "seed")


class AttributeNeeded(ValueError):
    """A class-conditional eraser ran without the attribute of its inputs."""


def cell_masses(cells: np.ndarray, groups: np.ndarray, *, cell_count: int, group_count: int) -> np.ndarray:
    """``[group_count, cell_count]``: row ``z`` is the share of group ``z``'s records in each cell.
    ``cells`` and ``groups`` are per-record integer indices (``[n]`` each); every group needs a record."""
    cells, groups = np.asarray(cells), np.asarray(groups)
    if cells.shape != groups.shape or cells.ndim != 1:
        raise ValueError(f"cells {cells.shape} and groups {groups.shape} must be two [n] index arrays")
    counts = np.zeros((group_count, cell_count))
    np.add.at(counts, (groups, cells), 1.0)
    sizes = counts.sum(axis=1, keepdims=True)
    if (sizes == 0).any():
        raise ValueError(f"group(s) {np.flatnonzero(sizes[:, 0] == 0).tolist()} have no records")
    return counts / sizes


def barycenter_couplings(masses: np.ndarray, weights: np.ndarray, cost: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The fixed-support Wasserstein barycenter of the rows of ``masses`` (``[g, K]``, each summing to 1)
    under ``cost`` (``[K, K]``, e.g. squared distances between the support points), weighted by ``weights``
    (``[g]``), and the optimal couplings to it: ``(target [K], couplings [g, K, K])``, where
    ``couplings[z].sum(1) == masses[z]`` and ``couplings[z].sum(0) == target`` for every ``z``.

    One linear programme: minimise ``sum_z weights[z] <cost, couplings[z]>`` over non-negative couplings
    with those margins, the target free (Anderes, Borgwardt & Miller 2016)."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    masses, weights, cost = np.asarray(masses, float), np.asarray(weights, float), np.asarray(cost, float)
    g, k = masses.shape
    if weights.shape != (g,) or cost.shape != (k, k):
        raise ValueError(f"weights {weights.shape} and cost {cost.shape} do not fit masses {masses.shape}")
    if (masses < 0).any() or not np.allclose(masses.sum(axis=1), 1.0):
        raise ValueError("every row of masses must be a distribution (non-negative, summing to 1)")
    plan = g * k * k
    index = np.arange(plan).reshape(g, k, k)
    # Row margins (z, i): sum_j pi_z[i, j] = masses[z, i]; column margins (z, j): sum_i pi_z[i, j] - target[j] = 0.
    row_ids = np.repeat(np.arange(g * k), k)
    col_ids = g * k + np.arange(g * k).reshape(g, k)[:, None, :].repeat(k, axis=1).ravel()
    rows = np.concatenate([row_ids, col_ids, g * k + np.arange(g * k)])
    columns = np.concatenate([index.ravel(), index.ravel(), plan + np.tile(np.arange(k), g)])
    values = np.concatenate([np.ones(2 * plan), -np.ones(g * k)])
    constraints = coo_matrix((values, (rows, columns)), shape=(2 * g * k, plan + k))
    bounds_rhs = np.concatenate([masses.ravel(), np.zeros(g * k)])
    scale = cost.max() if cost.max() > 0 else 1.0
    objective = ((weights / weights.sum())[:, None, None] * (cost / scale)[None]).ravel()
    solved = linprog(np.concatenate([objective, np.zeros(k)]), A_eq=constraints, b_eq=bounds_rhs,
                     bounds=(0, None), method="highs")
    if solved.status != 0:
        raise ValueError(f"the barycenter's linear programme found no solution: {solved.message}")
    couplings = np.clip(solved.x[:plan].reshape(g, k, k), 0.0, None)
    target = np.clip(solved.x[plan:], 0.0, None)
    return target / target.sum(), couplings


def transport_kernels(masses: np.ndarray, couplings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``[g, K, K]``: row ``[z, i]`` is where a representation of group ``z`` nearest centroid ``i`` goes,
    ``couplings[z, i] / masses[z, i]``. A cell without fitting records of group ``z`` (a new record may
    still land there) takes the row of the nearest cell that has some, so every row is a distribution."""
    masses, couplings = np.asarray(masses, float), np.asarray(couplings, float)
    distances = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=-1)
    kernels = np.zeros_like(couplings)
    for group in range(masses.shape[0]):
        held = masses[group] > 0
        nearest_held = np.where(held[None, :], distances, np.inf).argmin(axis=1)
        source = np.where(held, np.arange(len(held)), nearest_held)
        rows = couplings[group, source]
        kernels[group] = rows / rows.sum(axis=1, keepdims=True)
    return kernels


class CouplingEraser(nn.Module):
    """The coupling as stored tensors: ``centroids`` ``[K, d]``, ``kernels`` ``[g, K, K]`` (rows are
    distributions over the centroids), ``values`` ``[g]`` (the attribute value of each group) and ``seed``
    ``[1]``. Forward needs the attribute of each input (:func:`attribute_given`)."""

    TENSOR_FIELDS = COUPLING_FIELDS

    def __init__(self, centroids: torch.Tensor, kernels: torch.Tensor, values: torch.Tensor,
                 seed: torch.Tensor) -> None:
        super().__init__()
        if centroids.ndim != 2 or kernels.ndim != 3 or values.ndim != 1 or seed.numel() != 1:
            raise ValueError("a coupling eraser needs 2-d centroids, 3-d kernels, 1-d values and one seed")
        cells = centroids.shape[0]
        if kernels.shape != (values.shape[0], cells, cells):
            raise ValueError(f"coupling eraser tensors do not fit: centroids {tuple(centroids.shape)}, kernels "
                             f"{tuple(kernels.shape)}, values {tuple(values.shape)}")
        if values.dtype.is_floating_point or torch.unique(values).numel() != values.numel():
            raise ValueError("the coupling eraser's values must be distinct integers (one per attribute group)")
        if (kernels < 0).any() or not torch.allclose(kernels.sum(-1), torch.ones(kernels.shape[:2], dtype=kernels.dtype),
                                                     atol=1e-4):
            raise ValueError("every row of the coupling eraser's kernels must be a distribution")
        self.register_buffer("centroids", centroids.detach().float().clone(), persistent=False)
        self.register_buffer("kernels", kernels.detach().float().clone(), persistent=False)
        self.register_buffer("values", values.detach().long().clone(), persistent=False)
        self.register_buffer("seed", seed.detach().long().reshape(1).clone(), persistent=False)
        self.attribute: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attribute is None:
            raise AttributeNeeded(
                "this layer's concept eraser (pef_coupling) is class-conditional: it needs the attribute of every "
                "input at inference, and none was given (run the model inside attribute_given(model, labels))")
        return couple(x, self.attribute, self.centroids, self.kernels, self.values, int(self.seed.item()))


def couple(x: torch.Tensor, attribute: torch.Tensor, centroids: torch.Tensor, kernels: torch.Tensor,
           values: torch.Tensor, seed: int) -> torch.Tensor:
    """Replace each row of ``x`` (``[n, d]``) by the centroid drawn from its group's kernel row at its
    nearest centroid; ``attribute`` (``[n]``) gives each row's group by its value. The draw reads
    :func:`input_uniforms`: the same row, the same output, in any batch."""
    if x.ndim != 2 or x.shape[-1] != centroids.shape[1]:
        raise ValueError(f"the eraser takes [batch, {centroids.shape[1]}] outputs, the layer gave {tuple(x.shape)}")
    attribute = torch.as_tensor(attribute, device=x.device).long().reshape(-1)
    if attribute.shape[0] != x.shape[0]:
        raise AttributeNeeded(f"{attribute.shape[0]} attribute values were given for a batch of {x.shape[0]} inputs")
    matches = attribute.unsqueeze(1) == values.to(x.device).unsqueeze(0)
    unknown = ~matches.any(dim=1)
    if unknown.any():
        raise AttributeNeeded(f"attribute value(s) {sorted(set(attribute[unknown].tolist()))} were not among those "
                              f"the eraser was fitted on ({values.tolist()})")
    group = matches.float().argmax(dim=1)
    cell = torch.cdist(x.float(), centroids.to(x.device)).argmin(dim=1)
    rows = kernels.to(x.device)[group, cell]
    uniform = input_uniforms(x, seed).to(rows.dtype)
    drawn = torch.searchsorted(rows.cumsum(dim=1), uniform.unsqueeze(1)).squeeze(1).clamp_max(rows.shape[1] - 1)
    return centroids.to(x.device, x.dtype)[drawn]


def input_uniforms(x: torch.Tensor, seed: int, *, resolution: float = 0.01) -> torch.Tensor:
    """One number in [0, 1) per row of ``x`` (``[n, d]``), a function of that row (on a grid of
    ``resolution``) and ``seed`` alone: a seeded integer hash of the row's grid point, so the float noise
    of another batch size in the layers before does not change it (it would have to cross a grid line),
    and the same row gets the same number in any batch, on any device."""
    modulus = 2_147_483_647  # a prime
    generator = torch.Generator().manual_seed(int(seed))
    weights = torch.randint(1, modulus, (x.shape[1],), generator=generator, dtype=torch.int64).to(x.device)
    grid = torch.round(x.detach().to(torch.float64) / resolution).to(torch.int64) % modulus
    hashed = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    for column in range(x.shape[1]):  # (a * b) % p stays below 2**62: no int64 overflow
        hashed = (hashed + grid[:, column] * weights[column] % modulus) % modulus
    return hashed.to(torch.float64) / modulus


def coupling_erasers(model: nn.Module) -> list[CouplingEraser]:
    """The class-conditional erasers in ``model``."""
    return [module for module in model.modules() if isinstance(module, CouplingEraser)]


@contextmanager
def attribute_given(model: nn.Module, attribute: torch.Tensor) -> Iterator[nn.Module]:
    """Run ``model`` with ``attribute`` (``[batch]`` integer values) given to its class-conditional erasers
    for the batch; outside the block they need it again. Does nothing for a model without such erasers."""
    erasers = coupling_erasers(model)
    for eraser in erasers:
        eraser.attribute = torch.as_tensor(attribute)
    try:
        yield model
    finally:
        for eraser in erasers:
            eraser.attribute = None


# The fewest fitting records a stored centroid may average: a centroid is stored with the model and
# served as a representation, so a cell of one record would keep that record's representation.
MIN_CELL_RECORDS = 5


def small_cells_merged(points: np.ndarray, *, cells: int, seed: int, min_records: int) -> tuple[np.ndarray, np.ndarray]:
    """A k-means codebook of ``points`` (``[n, d]``) with at most ``cells`` cells, each holding at
    least ``min_records`` points: the smallest cell below that is merged into the cell of the nearest
    centroid (its points move, the centroid becomes their mean) until none is. Out: ``(centroids
    [k, d], cell of each point [n])``. ``ValueError`` if fewer than two cells would be left."""
    from sklearn.cluster import KMeans

    codebook = KMeans(n_clusters=cells, n_init=3, random_state=seed).fit(points)
    labels = codebook.labels_.copy()
    while True:
        kept = np.unique(labels)
        counts = np.array([(labels == c).sum() for c in kept])
        centroids = np.stack([points[labels == c].mean(axis=0) for c in kept])
        if counts.min() >= min_records:
            return centroids, np.searchsorted(kept, labels)
        if len(kept) <= 2:
            raise ValueError(f"no codebook of 2 or more cells gives every cell {min_records} or more fitting records")
        small = int(np.argmin(counts))
        distance = ((centroids - centroids[small]) ** 2).sum(axis=1)
        distance[small] = np.inf
        labels[labels == kept[small]] = kept[int(np.argmin(distance))]


def fit_coupling_eraser(features: torch.Tensor, labels: torch.Tensor, *, cells: int = 16,
                        seed: int = 0, min_cell_records: int = MIN_CELL_RECORDS) -> tuple[CouplingEraser, float]:
    """Fit the coupling on ``features`` (``[n, d]``) with integer attribute ``labels`` (``[n]``): returns
    the eraser and the barycenter's transport cost (mean squared distance a representation is moved, in
    the features' units). At most ``cells`` cells, fewer where a cell would average fewer than
    ``min_cell_records`` records (:func:`small_cells_merged`). ``ValueError`` for fewer than two values
    or fewer records than ``2 * cells``."""
    if features.ndim != 2 or labels.ndim != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} do not pair up")
    if labels.dtype.is_floating_point:
        raise ValueError("attribute labels must be integers")
    values, groups = torch.unique(labels, return_inverse=True)
    if values.numel() < 2:
        raise ValueError("the attribute takes a single value on the fitting records: nothing to erase")
    if features.shape[0] < 2 * cells:
        raise ValueError(f"{features.shape[0]} fitting records are too few for {cells} cells (at least {2 * cells})")
    points = features.double().numpy()
    centroids, cell_of = small_cells_merged(points, cells=cells, seed=seed, min_records=min_cell_records)
    masses = cell_masses(cell_of, groups.numpy(), cell_count=centroids.shape[0], group_count=values.numel())
    weights = np.bincount(groups.numpy(), minlength=values.numel()).astype(float)
    cost = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    _target, couplings = barycenter_couplings(masses, weights, cost)
    moved = float(sum(w * (c * cost).sum() for w, c in zip(weights / weights.sum(), couplings, strict=True)))
    kernels = transport_kernels(masses, couplings, centroids)
    eraser = CouplingEraser(torch.from_numpy(centroids), torch.from_numpy(kernels), values,
                            torch.tensor([seed]))
    return eraser, moved
