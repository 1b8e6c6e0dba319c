"""Tools (and a guardrail) for the example crew: deterministic and offline.

They are plain typed functions with docstrings; a crew file names them by import path
(``crewline.examples.tools:lookup``) and crewline builds each tool's schema from its type
hints and its ``Args:`` section.
"""

from __future__ import annotations

from typing import Any

from crewline import TaskOutput

__all__ = ["FACTS", "at_most_80_words", "lookup", "word_count"]

FACTS: dict[str, tuple[str, str, str]] = {
    "octopuses": ("An octopus has three hearts.",
                  "Its blood is blue, carried by copper-based hemocyanin.",
                  "Most of its neurons sit in its eight arms."),
    "honeybees": ("A honeybee colony can hold 60,000 workers in summer.",
                  "Foragers tell each other where flowers are with a waggle dance.",
                  "A worker makes about a twelfth of a teaspoon of honey in her life."),
    "volcanoes": ("About 1,350 volcanoes on land could erupt again.",
                  "Most eruptions happen along the edges of tectonic plates.",
                  "Volcanic ash is made of tiny shards of rock and glass."),
    "black holes": ("A black hole's gravity lets nothing, not even light, escape.",
                    "The first image of one, M87*, was published in 2019.",
                    "Sagittarius A* sits at the centre of the Milky Way."),
    "tardigrades": ("Tardigrades are under a millimetre long.",
                    "Dried out, they survive years as a 'tun'.",
                    "Some survived exposure to open space in 2007."),
    "coral reefs": ("Coral reefs cover under one percent of the ocean floor.",
                    "They shelter about a quarter of all marine species.",
                    "Corals get their colour from algae living in their tissue."),
    "glaciers": ("Glaciers hold about 69 percent of Earth's fresh water.",
                 "Glacier ice looks blue because it absorbs red light.",
                 "Some glaciers flow more than 20 metres a day."),
    "mushrooms": ("A mushroom is the fruiting body of a much larger fungus.",
                  "Fungal threads called hyphae spread through the soil.",
                  "One honey fungus in Oregon covers nearly ten square kilometres."),
    "lightning": ("Lightning heats the air to about 30,000 kelvin.",
                  "Earth sees roughly 45 flashes every second.",
                  "Thunder is the sound of that air expanding suddenly."),
    "penguins": ("All wild penguins but one species live south of the equator.",
                 "Emperor penguins dive deeper than 500 metres.",
                 "A penguin's black-and-white coat camouflages it while swimming."),
    "the moon": ("The Moon is drifting away from Earth by 3.8 centimetres a year.",
                 "It always shows Earth the same face.",
                 "Twelve people have walked on its surface."),
    "rainbows": ("A rainbow forms when sunlight refracts and reflects in raindrops.",
                 "Its red band is always on the outside of the arc.",
                 "From an aeroplane a rainbow can be a full circle."),
    "sharks": ("Sharks existed before trees did.",
               "Their skin is covered in tooth-like scales called denticles.",
               "Some sharks replace thousands of teeth in a lifetime."),
    "owls": ("Owls cannot move their eyes, so they turn their heads instead.",
             "Soft feather fringes let them fly almost silently.",
             "Many owls have one ear higher than the other."),
    "deserts": ("Deserts are defined by low rainfall, not by heat.",
                "Antarctica is the largest desert on Earth.",
                "The Atacama has places with no recorded rain."),
    "bamboo": ("Some bamboo grows nearly a metre in one day.",
               "Bamboo is a grass, not a tree.",
               "Many species flower all at once, decades apart."),
    "whales": ("The blue whale is the largest animal known to have lived.",
               "Humpback whales sing songs that change from year to year.",
               "Whales descend from land mammals."),
    "comets": ("A comet is a ball of ice, dust and rock.",
               "Its tail always points away from the Sun.",
               "Halley's Comet returns about every 76 years."),
    "ants": ("Ants talk to each other mostly through chemical trails.",
             "Leafcutter ants farm fungus on the leaves they carry.",
             "Some ant colonies hold millions of workers."),
    "hummingbirds": ("Hummingbirds can fly backwards.",
                     "Their hearts can beat over 1,200 times a minute.",
                     "They eat about half their weight in sugar each day."),
}
"""Canned reference facts, three per topic."""


def word_count(text: str) -> int:
    """Count the words in a text, as a word processor would.

    Args:
        text: The text to count.
    """
    return len(text.split())


def lookup(topic: str) -> str:
    """Look up reference facts about a topic.

    Args:
        topic: What to look up, for example "octopuses".
    """
    facts = FACTS.get(" ".join(topic.lower().split()))
    if facts is None:
        known = ", ".join(sorted(FACTS))
        return f"No reference entry for {topic!r}. Entries exist for: {known}."
    return "\n".join(f"- {fact}" for fact in facts)


def at_most_80_words(output: TaskOutput) -> tuple[bool, Any]:
    """Guardrail: accept a paragraph of at most 80 words, else ask for a shorter one."""
    words = len(output.raw.split())
    if words <= 80:
        return True, output.raw.strip()
    return False, f"the paragraph has {words} words; cut it to at most 80"
