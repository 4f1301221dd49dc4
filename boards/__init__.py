"""Board builds of the digital unit: platforms, the board top level, the open-toolchain build."""
