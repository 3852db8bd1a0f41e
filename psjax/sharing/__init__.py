from psjax.sharing.bank import SharingState, SlotLayout, apply_agents, init_bank
from psjax.sharing.methods import Scheme, make_scheme

__all__ = ["SharingState", "SlotLayout", "apply_agents", "init_bank", "Scheme", "make_scheme"]
