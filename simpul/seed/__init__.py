"""The synthetic Kota Serang: agency databases with a known truth, and live changes to them."""

from simpul.seed.changes import ChangeGenerator, ChangeSummary
from simpul.seed.city import SeedSummary, is_seeded, seed_city

__all__ = ["ChangeGenerator", "ChangeSummary", "SeedSummary", "is_seeded", "seed_city"]
