"""Is this an upper-extremity radiograph like the training images? A feature-distance score.

Softmax and energy scores of the part head are overconfident far from the data (measured on the demo model:
a chest film, a lower leg and pure noise all got 100 % "shoulder" and energies below the 99th val
percentile). This score instead measures how far the pooled backbone features lie from the nearest body
part's mean, in units of the per-feature spread (a diagonal Mahalanobis distance, Lee et al. 2018):
``min_k mean(((f - mean_k) / std) ** 2)``. Means, spread and the threshold (a quantile of the val scores)
are fitted on the val split and travel with the weights. Knows nothing about images or Gradio.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mura_mt.labels import BODY_PARTS

TENSOR_PREFIX = "ood."


@dataclass(frozen=True)
class FeatureDistance:
    means: torch.Tensor  # [7, F]: mean pooled feature of each body part
    inv_std: torch.Tensor  # [F]: 1 / within-part standard deviation of each feature
    threshold: float  # scores above this are unlike the training images

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """[N, F] -> [N]: distance to the nearest body part's mean."""
        scaled = (features.float()[:, None, :] - self.means[None]) * self.inv_std  # [N, 7, F]
        return scaled.pow(2).mean(dim=2).amin(dim=1)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"{TENSOR_PREFIX}means": self.means,
            f"{TENSOR_PREFIX}inv_std": self.inv_std,
            f"{TENSOR_PREFIX}threshold": torch.tensor([self.threshold]),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> FeatureDistance | None:
        if f"{TENSOR_PREFIX}means" not in tensors:
            return None
        return cls(
            tensors[f"{TENSOR_PREFIX}means"].float(),
            tensors[f"{TENSOR_PREFIX}inv_std"].float(),
            float(tensors[f"{TENSOR_PREFIX}threshold"][0]),
        )


def fit_feature_distance(features: torch.Tensor, parts: torch.Tensor, quantile: float = 0.99) -> FeatureDistance:
    """Fit on val features [N, F] with their true parts [N]; the threshold keeps ``quantile`` of val inside."""
    features = features.float()
    means = torch.stack(
        [
            features[parts == k].mean(dim=0) if (parts == k).any() else features.mean(dim=0)
            for k in range(len(BODY_PARTS))
        ]
    )
    residual = features - means[parts]
    inv_std = 1.0 / torch.sqrt(residual.var(dim=0) + 1e-6)
    fitted = FeatureDistance(means, inv_std, threshold=float("inf"))
    threshold = float(torch.quantile(fitted.score(features), quantile))
    return FeatureDistance(means, inv_std, threshold)
