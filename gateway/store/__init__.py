"""Durability behind one small interface (`base.Store`): memory and the on-disk default."""
