"""Pure rules of the node: money, pricing, balances, fees. Standard library only."""
