-- expect: tests/spec_fail/lightning_module.lua:2: loom has no LightningModule: declare model "Name" { ... } with its forward, and the loss in train { loss = ... } (loom help model)
local Net = LightningModule {}
