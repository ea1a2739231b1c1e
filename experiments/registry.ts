// Every experiment, in the order `all` runs them. Add one line per experiment.
import type { Experiment } from './types.js';
import { usersExperiment } from './users.js';
import { usersDoraExperiment } from './users-dora.js';
import { fig6Expressivity } from './fig6-expressivity.js';
import { fig2RankScaling } from './fig2-rank-scaling.js';
import { fig2RankScalingDora } from './fig2-rank-scaling-dora.js';
import { table12Cost } from './table12-cost.js';
import { table6Ablations } from './table6-ablations.js';
import { table7Projections } from './table7-projections.js';
import { fig3DNorms } from './fig3-d-norms.js';
import { appdSimilarity } from './appd-similarity.js';
import { seed000Forgetting } from './seed000-forgetting.js';

export const EXPERIMENTS: Experiment[] = [
  usersExperiment,
  fig6Expressivity,
  fig2RankScaling,
  table12Cost,
  table6Ablations,
  table7Projections,
  fig3DNorms,
  appdSimilarity,
  seed000Forgetting,
  usersDoraExperiment,
  fig2RankScalingDora,
];
