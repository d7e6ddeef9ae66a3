"""One module per rule; ``lint.rule.all_rules`` finds them, so adding a rule needs no registration."""
