"""Memristive crossbars: device models read from data files (:mod:`.devices`,
``device_data/``), arrays of them programmed and read in the training loop (:mod:`.array`),
ex-situ transfers onto fresh arrays (:mod:`.transfer`) and how a lab writes them
(:mod:`.write_plan`)."""
