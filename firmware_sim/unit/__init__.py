"""The digital unit as a bit-exact model: the hidden weights and their update
(:mod:`.digital_unit`), and the command engine's behaviour over it (:mod:`.command_model`)."""
