"""``python -m emulators.aoai``: the Azure OpenAI emulator on its own."""

from emulators.aoai import main

main()
