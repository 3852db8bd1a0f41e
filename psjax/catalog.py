"""The built-in methods. Each method module defines its records (``METHODS``, ``psjax.registry.Method``);
adding a method is its module plus one entry in ``MODULES``, whose order is the order of ``registry.names()``
(tables, ``compare``'s rows) whatever order the modules happen to be imported in."""

from psjax import registry
from psjax.sharing import baselines, bdps, dico, hypermarl, identity, kaleidoscope, madps, pps

MODULES = (
    baselines,  # nops, fups, fups_id, snp_ps
    pps,  # pps_a, pps_rs, pps_pp
    identity,  # seps, adaps
    kaleidoscope,
    madps,
    bdps,  # bdps, bdps_role, bdps_team
    hypermarl,
    dico,
)
for _module in MODULES:
    for _method in _module.METHODS:
        registry.register(_method)
