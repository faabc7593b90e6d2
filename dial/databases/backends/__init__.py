"""One module per database; `dial.registry` names the class serving each scheme."""
