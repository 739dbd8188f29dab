"""ISO 22400-2 work-unit KPIs per equipment and shift, computed at the edge from the readings the
agent already takes (see ``engine`` for how it runs, ``equipment`` for the accounting rules)."""
