"""Every meta-RL task family, registered by an explicit import of its module (this list is the
family registry); `metazoo.rl.base.make_family` imports this package on first use, so
`import metazoo` needs no gymnasium."""

from __future__ import annotations

from metazoo.rl.families import (  # noqa: F401  (imported to register)
    bandit,
    cheetah,
    navigation,
    tabular_mdp,
)
