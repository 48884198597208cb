"""The names of the cost's main terms, in the order every table, plot and progress bar shows them."""

LOSS_TERMS = ("total", "content", "style", "tv")
LOGGED_TERMS = tuple(f"loss/{term}" for term in LOSS_TERMS)  # as the module logs them


def main_terms(losses: dict[str, float]) -> dict[str, float]:
    """{"total": ..., "content": ..., ...} from a module's logged losses ("loss/total", ...)."""
    return {term: losses[f"loss/{term}"] for term in LOSS_TERMS}
