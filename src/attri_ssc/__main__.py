"""``python -m attri_ssc`` is the ``attri-ssc`` command (also under ``torchrun``)."""

from attri_ssc.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
