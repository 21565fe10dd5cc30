"""The quickstart's own small test collection: original text written for this project.

Sixty short documents on six everyday topics (bread baking, bicycle repair, home
solar and batteries, beekeeping, amateur astronomy, houseplants), twelve queries and
graded judgments (2 = answers the question, 1 = related and partly useful). Queries
are phrased the way people ask, not the way the documents are written, and several
documents share a query's words in another sense ("leaves", "mites", "dense"), so
word matching alone ranks some wrong documents high: the situation a reranker is for.

The text is original to rerank-plugins and shipped under the project's licence.
"""

from __future__ import annotations

#: doc id -> (title, text)
DOCUMENTS: dict[str, tuple[str, str]] = {
    # -- bread baking -----------------------------------------------------------
    "bread-01": ("Underproofed dough",
                 "A loaf that bakes up tight, heavy and with a few large tunnels under "
                 "the crust usually did not ferment long enough. Give the shaped dough "
                 "more time in a warm spot until a gentle poke springs back slowly."),
    "bread-02": ("A sluggish starter",
                 "If the culture barely rises after feeding, the yeast and bacteria are "
                 "weak. Feed it twice a day at room temperature for several days before "
                 "baking; a starter that doubles within six hours is ready to raise a "
                 "loaf."),
    "bread-03": ("Building surface tension when shaping",
                 "Drag the dough towards you on an unfloured counter so the outer skin "
                 "tightens. A taut skin holds gas and lets the loaf rise upward in the "
                 "oven instead of spreading sideways like a pancake."),
    "bread-04": ("Choosing flour by protein content",
                 "Bread flour has more protein than cake flour, which means stronger "
                 "gluten that traps the gas of fermentation. Low-protein flour gives a "
                 "softer crumb but a weaker structure that can slump."),
    "bread-05": ("Storing a starter in the refrigerator",
                 "A culture fed and then kept cold slows down so much that it only "
                 "needs feeding about once a week. Before a long trip, give it a thick "
                 "feed, chill it, and refresh it twice when you get back."),
    "bread-06": ("Drying starter as a backup",
                 "Spread a thin layer of active starter on baking paper and let it dry "
                 "completely. The flakes keep for months in a jar and come back to life "
                 "after a few days of feeding with flour and water."),
    "bread-07": ("Feeding ratios explained",
                 "A one-to-one-to-one feed (starter, flour, water by weight) peaks "
                 "quickly; a one-to-five-to-five feed takes longer and tastes milder. "
                 "Larger ratios are handy when you cannot tend the jar for a day."),
    "bread-08": ("Oven spring and steam",
                 "Steam in the first minutes of baking keeps the crust soft so the loaf "
                 "can expand. A covered cast-iron pot traps the moisture released by "
                 "the dough itself."),
    "bread-09": ("Scoring patterns",
                 "A single deep slash at a shallow angle opens into an ear. Decorative "
                 "patterns look good but release less pressure, so pair them with one "
                 "main cut."),
    "bread-10": ("Baking at high altitude",
                 "Lower air pressure makes dough rise faster, so shorten the final proof "
                 "and raise the oven heat slightly to set the structure before it "
                 "overexpands."),
    # -- bicycle repair ---------------------------------------------------------
    "bike-01": ("Contaminated brake pads",
                "Oil or chain lube on the braking surface makes pads howl and lose "
                "grip. Clean the rotor with isopropyl alcohol and sand or replace pads "
                "that have soaked up grease."),
    "bike-02": ("Toeing in rim brakes",
                "Rim brake shoes that meet the rim flat often vibrate and shriek. Set "
                "the front of each shoe to touch the rim a millimetre before the rear "
                "so the pad bites smoothly."),
    "bike-03": ("Bedding in new disc brakes",
                "New pads and rotors need a layer of pad material transferred to the "
                "rotor. Do twenty firm stops from moderate speed without locking the "
                "wheel; noise and weak braking usually disappear."),
    "bike-04": ("Measuring chain wear",
                "A chain stretches as its pins and rollers wear. When a checker shows "
                "0.75 percent elongation the chain no longer meshes with the sprockets "
                "and pedalling hard makes it jump; replace it, and often the cassette "
                "too."),
    "bike-05": ("Adjusting derailleur indexing",
                "If shifts hesitate or the drivetrain clicks between sprockets, turn "
                "the barrel adjuster a quarter turn at a time until each click of the "
                "lever moves the derailleur exactly one cog."),
    "bike-06": ("A bent derailleur hanger",
                "After a fall the small metal hanger that holds the rear derailleur "
                "often bends inward, so no cable tension gives clean shifting. A "
                "hanger alignment tool straightens it in minutes."),
    "bike-07": ("Fixing a flat tyre",
                "Remove the wheel, lever one bead off the rim and pull out the tube. "
                "Find the puncture, check the inside of the tyre for the thorn, then "
                "patch or replace the tube and reinflate."),
    "bike-08": ("Tubeless sealant",
                "Liquid latex inside a tubeless tyre plugs small holes as you ride. "
                "Top it up every few months because it dries out, especially in hot "
                "weather."),
    "bike-09": ("Choosing gear ratios for hills",
                "A smaller chainring or a larger rear cog lowers the gear so steep "
                "climbs need less force per pedal stroke, at the cost of top speed on "
                "the flat."),
    "bike-10": ("Cleaning a drivetrain",
                "Degrease the chain, cassette and chainrings, rinse, dry and apply a "
                "little lubricant to each roller. Wipe off the excess so it does not "
                "collect grit."),
    # -- home solar and batteries -----------------------------------------------
    "solar-01": ("Cycle life of home storage",
                 "Lithium iron phosphate home batteries typically deliver between "
                 "four and six thousand full cycles before they fall to eighty percent "
                 "of their original capacity, which is ten to fifteen years of daily "
                 "use."),
    "solar-02": ("Depth of discharge",
                 "Draining a battery completely every day wears it faster than using "
                 "only the middle of its range. Many systems reserve a buffer at the "
                 "top and bottom to extend service life."),
    "solar-03": ("Heat and battery ageing",
                 "Cells age faster when they are kept warm. A battery installed in a "
                 "hot garage loses capacity noticeably sooner than one in a cool, "
                 "shaded utility room."),
    "solar-04": ("Temperature coefficient of panels",
                 "Photovoltaic modules convert light less efficiently as they get "
                 "hotter: output falls by roughly 0.3 to 0.5 percent for every degree "
                 "above 25 C, so a blazing July afternoon can yield less than a cool "
                 "sunny spring day."),
    "solar-05": ("Shading and bypass diodes",
                 "A shadow across a single cell can drag down a whole string of "
                 "modules. Bypass diodes and module-level optimisers limit the loss to "
                 "the shaded part."),
    "solar-06": ("Energy density of battery chemistries",
                 "Nickel-rich lithium cells are dense, storing more energy per "
                 "kilogram, while iron phosphate cells are heavier for the same "
                 "capacity but tolerate abuse and heat better."),
    "solar-07": ("Sizing an inverter",
                 "The inverter should cover the largest load you expect to run at "
                 "once. Motors and compressors draw a surge several times their rated "
                 "power when they start."),
    "solar-08": ("Net metering",
                 "Under net metering, electricity you export during the day is "
                 "credited against what you draw at night, which changes whether a "
                 "battery pays for itself."),
    "solar-09": ("Cleaning panels",
                 "Dust and pollen cut output a few percent; rain usually rinses tilted "
                 "panels clean. Use soft water and a brush, never a pressure washer."),
    "solar-10": ("Leaving a system unattended",
                 "Before going on holiday, keep the battery connected so its "
                 "management system can protect it, and check that the app alerts you "
                 "about faults."),
    # -- beekeeping -------------------------------------------------------------
    "bees-01": ("Absconding colonies",
                "Sometimes an entire colony abandons its hive, leaving comb and stores "
                "behind. Heat, repeated disturbance, ants or a heavy pest load can "
                "drive a whole colony to move out."),
    "bees-02": ("Swarming and how to prevent it",
                "A crowded colony raises new queens and the old queen flies off with "
                "half the workers. Giving extra space early and splitting strong "
                "colonies keeps the bees at home."),
    "bees-03": ("Varroa destructor",
                "The varroa parasite feeds on developing and adult honeybees and "
                "spreads viruses. Untreated infestations are the most common reason "
                "colonies collapse over winter."),
    "bees-04": ("Oxalic acid treatment",
                "Oxalic acid dribbled or vaporised into a broodless colony kills most "
                "phoretic varroa. Apply it in late autumn or winter when there is "
                "little capped brood to shelter the parasites."),
    "bees-05": ("Sugar roll monitoring",
                "Shake about three hundred nurse bees into a jar with powdered sugar, "
                "roll it, and count the parasites that fall through the mesh lid to "
                "estimate the infestation rate."),
    "bees-06": ("Feeding syrup in autumn",
                "Colonies short of stores can be fed a thick two-to-one sugar syrup "
                "in autumn so they can fill and cap the comb before it gets cold."),
    "bees-07": ("Reading brood patterns",
                "A solid, compact brood pattern means a laying queen in good health; "
                "scattered cells may point to disease or a failing queen."),
    "bees-08": ("Wax moths",
                "Wax moth larvae tunnel through stored comb. Freezing frames for two "
                "days and storing them in a cool, bright place prevents damage."),
    "bees-09": ("Choosing a hive site",
                "Bees prefer a sheltered spot with morning sun, a water source nearby "
                "and an entrance facing away from the prevailing wind."),
    "bees-10": ("Honey extraction",
                "Uncap the frames with a heated knife, spin them in an extractor, and "
                "strain the honey before it goes into jars."),
    # -- amateur astronomy ------------------------------------------------------
    "astro-01": ("Observing around new moon",
                 "Faint galaxies and nebulae need the darkest sky you can find. Plan "
                 "deep-sky sessions for the week around new moon, after astronomical "
                 "twilight ends."),
    "astro-02": ("Dark adaptation",
                 "The eye needs twenty to thirty minutes without bright light to reach "
                 "full sensitivity. Use a dim red torch so you do not lose it while "
                 "reading charts."),
    "astro-03": ("Light pollution",
                 "Skyglow from streetlights washes out diffuse objects. Driving to a "
                 "site rated Bortle 3 or darker reveals spiral arms that are invisible "
                 "from a suburban garden."),
    "astro-04": ("Collimating a reflector",
                 "When the mirrors of a Newtonian telescope are misaligned, point "
                 "sources smear into comet shapes. Align the secondary, then the "
                 "primary, with a collimation cap or laser."),
    "astro-05": ("Letting the optics cool",
                 "A telescope carried from a warm house shows boiling, soft images "
                 "until the mirror reaches the outside temperature. Set it out an "
                 "hour before observing."),
    "astro-06": ("Atmospheric seeing",
                 "Turbulent air makes stars twinkle and planets shimmer. On nights of "
                 "poor seeing no telescope delivers sharp detail at high "
                 "magnification."),
    "astro-07": ("Choosing eyepieces",
                 "Magnification equals the telescope's focal length divided by the "
                 "eyepiece's. A low-power eyepiece with a wide field is best for "
                 "finding objects."),
    "astro-08": ("Photographing the Milky Way",
                 "A wide lens, a sturdy tripod and exposures of about twenty seconds "
                 "capture the galactic core from a dark site in summer."),
    "astro-09": ("Star hopping",
                 "Start from a bright star you know and move from pattern to pattern "
                 "on a chart until the target lies in the finder."),
    "astro-10": ("Meteor showers",
                 "The Perseids peak in mid-August. Lie back, look about halfway up the "
                 "sky, and let your eyes wander; no telescope is needed."),
    # -- houseplants ------------------------------------------------------------
    "plant-01": ("Overwatering and root rot",
                 "Soil that never dries suffocates roots, which then rot and cannot "
                 "take up nutrients. The first sign is often foliage going pale yellow "
                 "from the bottom of the plant upward."),
    "plant-02": ("Nitrogen deficiency",
                 "Older foliage that turns uniformly pale while new growth stays green "
                 "suggests the plant has used up the nitrogen in its potting mix; "
                 "feed with a balanced fertiliser."),
    "plant-03": ("Not enough light",
                 "A plant kept far from a window stretches toward the light, grows "
                 "small new foliage and may shed its lower leaves."),
    "plant-04": ("Species that tolerate shade",
                 "Snake plants, ZZ plants, pothos and cast-iron plants cope with a "
                 "north-facing room or a corridor far from any window and still stay "
                 "green."),
    "plant-05": ("Using grow lights",
                 "A full-spectrum LED panel on a timer for twelve hours a day lets "
                 "herbs and foliage plants thrive in a windowless space."),
    "plant-06": ("Spider mites on houseplants",
                 "Fine webbing and speckled leaves point to spider mites. Rinse the "
                 "plant in the shower and wipe leaves with insecticidal soap every "
                 "few days."),
    "plant-07": ("Repotting",
                 "Move a plant to a pot one size larger in spring when roots circle "
                 "the bottom or grow out of the drainage holes."),
    "plant-08": ("Humidity for tropical plants",
                 "Calatheas and ferns brown at the edges in dry indoor air. Group "
                 "plants together or use a humidifier in winter."),
    "plant-09": ("Propagating cuttings",
                 "Cut a stem just below a node, remove the lower leaves and stand it "
                 "in water until roots appear, then pot it up."),
    "plant-10": ("Autumn leaves",
                 "Trees drop their leaves in autumn to save water; the yellow and red "
                 "colours appear as the green chlorophyll breaks down."),
}

#: query id -> question, phrased the way a user would ask it
QUERIES: dict[str, str] = {
    "q01": "why is my homemade bread dense and flat",
    "q02": "how do I keep a wild yeast culture alive while I am away on holiday",
    "q03": "my bike makes a loud squeal when I stop",
    "q04": "chain keeps slipping when I pedal hard",
    "q05": "how many years will a home battery last before it needs replacing",
    "q06": "why do my panels produce less power in the summer heat",
    "q07": "why did all my bees leave the hive",
    "q08": "treating mites in a honey bee colony",
    "q09": "when is the best time to see faint galaxies",
    "q10": "stars look blurry through my telescope",
    "q11": "leaves of my indoor plant are turning yellow",
    "q12": "which plant can live in a dark room with no sun",
}

#: query id -> doc id -> grade (2 answers the question, 1 partly useful)
QRELS: dict[str, dict[str, int]] = {
    "q01": {"bread-01": 2, "bread-02": 2, "bread-03": 2, "bread-04": 1, "bread-08": 1},
    "q02": {"bread-05": 2, "bread-06": 2, "bread-07": 1},
    "q03": {"bike-01": 2, "bike-02": 2, "bike-03": 1},
    "q04": {"bike-04": 2, "bike-05": 2, "bike-06": 1},
    "q05": {"solar-01": 2, "solar-02": 1, "solar-03": 1},
    "q06": {"solar-04": 2, "solar-05": 1, "solar-09": 1},
    "q07": {"bees-01": 2, "bees-02": 2, "bees-03": 1},
    "q08": {"bees-03": 2, "bees-04": 2, "bees-05": 1},
    "q09": {"astro-01": 2, "astro-03": 2, "astro-02": 1},
    "q10": {"astro-04": 2, "astro-05": 2, "astro-06": 2},
    "q11": {"plant-01": 2, "plant-02": 2, "plant-03": 1},
    "q12": {"plant-04": 2, "plant-05": 1, "plant-03": 1},
}

NAME = "rerank-plugins-demo"


def load_demo_collection():
    """The built-in corpus as a :class:`rerank_ops.collections.Collection` (no run)."""
    from .collections import Collection

    corpus = {doc_id: {"title": title, "text": text}
              for doc_id, (title, text) in DOCUMENTS.items()}
    qrels = {qid: dict(judged) for qid, judged in QRELS.items()}
    return Collection(NAME, corpus, dict(QUERIES), qrels)
